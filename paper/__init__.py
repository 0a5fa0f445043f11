"""The paper: make_assets writes generated/ and figures/ from the committed sweep exports."""
