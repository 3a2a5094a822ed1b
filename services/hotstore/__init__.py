"""hotstore"""
