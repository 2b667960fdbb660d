"""``manga-assets explore``: a local web application to look at galaxies and label them.

`products` holds a data directory's tables in memory, indexed by plate-IFU; `images` renders a
galaxy's maps (data, the published model's reconstruction and residuals) once into a cache;
`server` answers the pages and the JSON interface; `static/` holds every script and style, so
the application works offline.
"""
