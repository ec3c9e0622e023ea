"""halab core: config, image, cloud-init, terraform, virt, ssh, probes, traffic, faults, timeline.

Importable without Textual; nothing here prints.
"""
