"""Nurture: drip sequences decided by pure rules, rendered with Jinja2, sent through SES."""
