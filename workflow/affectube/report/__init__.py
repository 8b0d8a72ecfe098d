"""affectube.report"""
