"""Plant files shipped with PlantStream (a package only so the YAML ships in the wheel)."""
