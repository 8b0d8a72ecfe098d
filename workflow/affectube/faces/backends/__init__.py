"""Face detector backends (registered in :data:`affectube.faces.detect.BACKENDS`)."""
