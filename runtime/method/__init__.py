"""The paper's method steps as pure functions on arrays: tiling, background segmentation, weighted merging, post-processing, polygons."""
