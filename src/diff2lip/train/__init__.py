"""diff2lip.train"""
