"""Scaleshop's Python services: the shared package and one package per service."""
