"""diff2lip.video"""
