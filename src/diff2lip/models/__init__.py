"""diff2lip.models"""
