"""Where MaNGA files live and how they arrive: releases, SAS paths, HTTP transfer, the mirror server."""
