"""affectube.train"""
