"""Live stream processors: Rekognition's CreateStreamProcessor & co. on real cameras."""
