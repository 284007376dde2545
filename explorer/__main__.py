"""``python -m vaescope.explorer`` runs ``latent-explore``."""

from vaescope.explorer.ui.app import main

main()
