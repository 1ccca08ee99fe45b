"""stackseed: turn one topology file into a self-assembling OpenStack lab."""
