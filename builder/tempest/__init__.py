"""`lab tempest`: install tempest, discover the cloud, write tempest.conf, run and read results."""
