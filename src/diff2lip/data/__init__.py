"""diff2lip.data"""
