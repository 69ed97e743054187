# The production variant: no demo helpers, a first-boot check that fails
# without a working GPU, the journal capped. Select it in vault.toml:
#   var_files = ["packer/vault-cube/variants/production.pkrvars.hcl"]
variant = "production"
