"""The files of one slide's result (maps, mask, polygons, pyramidal heat map, overlay, summary)."""
