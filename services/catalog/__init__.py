"""The catalog service: products, categories, reviews and the product page.

The product page is assembled by application-side joins and cached whole (cached
objects); lists and category counts are cached by normalized query (cached queries);
writes make both stale at once through namespace generations.
"""
