"""affectube.models"""
