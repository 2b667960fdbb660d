"""Reading MaNGA DAP products: MAPS files and the DRPall/DAPall catalogues."""
