"""The exchange kit: what every use case does with partners, written once.

(Work in progress: modules land one by one; this docstring becomes the package's face.)
"""
