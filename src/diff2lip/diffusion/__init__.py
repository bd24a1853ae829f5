"""diff2lip.diffusion"""
