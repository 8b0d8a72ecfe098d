"""affectube.faces"""
