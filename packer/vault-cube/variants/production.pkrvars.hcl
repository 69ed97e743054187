# The production variant: no demo helpers, a first-boot check that fails
# without a working GPU, the journal capped. vault.toml names this file in
# [profiles.vault-cube.variants.production].
variant = "production"
