"""The catalog service: products, categories, reviews, the product page and job submission.

For now a placeholder that serves the endpoints every service has; its routes come
with the catalog issue.
"""
