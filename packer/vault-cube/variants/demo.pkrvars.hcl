# The demo variant (the seed's vault-cube-v1.0.0-demo): quick-start command and
# login banner, a first-boot check that records a missing GPU without failing.
variant = "demo"
