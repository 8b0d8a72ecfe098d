"""affectube.clips"""
