"""Reading whole-slide images and writing pyramids: the Slide facade, its sources (OpenSlide, direct TIFF decoding, DICOM series), exact-geometry resampling, pyramidal TIFF writing."""
