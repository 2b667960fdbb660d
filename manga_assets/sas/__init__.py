"""Where MaNGA files live and how they arrive: releases, SAS paths, transfer, integrity."""
