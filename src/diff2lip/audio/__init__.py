"""diff2lip.audio"""
