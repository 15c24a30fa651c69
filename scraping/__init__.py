"""WikiArt scraping (polite, resumable, public-domain only) and dataset preparation."""
