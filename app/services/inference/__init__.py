"""OpenVINO detection engine: model loading, preprocessing, the infer-request pool, postprocessing."""
