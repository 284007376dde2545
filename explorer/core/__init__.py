"""The explorer's core: models, latents, projections, traversals, samples and figures. No Gradio here."""
