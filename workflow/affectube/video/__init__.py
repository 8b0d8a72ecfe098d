"""affectube.video"""
