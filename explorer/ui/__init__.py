"""The explorer's page (Gradio only): the app that assembles one module per panel."""
