"""affectube.eval"""
