"""diff2lip.evaluation"""
