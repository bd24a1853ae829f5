"""diff2lip.inference"""
