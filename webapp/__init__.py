"""The Flask serving side of the chest X-ray triage app: storage, services, blueprints and CLI.

`app.create_app` wires these together; nothing here imports the `training` package.
"""
