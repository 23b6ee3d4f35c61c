"""Code shared by training and serving: image decoding, the one preprocessing path,
the decision rule and the model bundle. Nothing here imports from `training`."""
