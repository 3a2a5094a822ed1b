"""quality_checks"""
