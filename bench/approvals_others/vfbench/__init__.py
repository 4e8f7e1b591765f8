"""A minimal Django project for the viewflow side of the approvals benchmark."""
