#!/usr/bin/env bash
# Prints `--skip NAME` for every integration test ci/test.sh does not run a second time on
# PostgreSQL (docs/deployment.md#ci lists them with the reason). Everything else runs on
# both stores; store_cluster runs on PostgreSQL only.
set -euo pipefail
skips=(
  # In-process hardware and parser suites: no store at all.
  wycheproof:: fuzz_corpus:: hardware:: tpm::
  # Open the SQLite file behind the server to read or edit rows.
  abuse::old_format_keys_and_refresh_tokens_keep_working_until_regenerated_or_rotated
  api_keys::a_key_deleted_by_another_process_stops_working
  api_keys::an_expired_key_is_refused_like_an_unknown_one
  api_keys::the_store_holds_only_a_mac_of_each_secret
  audit::a_change_whose_audit_entry_cannot_be_written_fails_as_a_whole
  audit::refused_requests_become_one_entry_per_source_reason_and_minute_and_cost_nothing_more
  custody::a_tpm_key_attestation_verifies_with_tpm2_tools_openssl_and_python_cryptography
  custody::destroying_a_tpm_version_erases_its_blob_and_no_process_holding_the_old_row_can_load_it
  lifecycle::an_approval_edited_in_the_database_fails_verification_and_does_not_run
  lifecycle::audit_verify_names_the_first_edited_deleted_or_reordered_entry
  lifecycle::a_request_left_executing_by_a_killed_server_is_failed_at_the_next_start
  lifecycle::an_unknown_stored_key_state_is_corrupt_at_the_store_boundary
  # A full disk under the embedded store; on PostgreSQL the disk is the database server's.
  outage::a_full_store_disk_refuses_writes_with_503_store_full_keeps_reads_and_resumes_when_freed
  # The dev layout's SQLite file itself: its presence, a store file of the previous
  # release, a newer schema written into the file (store_cluster has the PostgreSQL
  # case). Backup and restore copy the SQLite file by design; on PostgreSQL they refuse,
  # which ops::every_subcommand_works_with_the_arguments_that_started_a_dev_server checks
  # (docs/backup.md#postgresql).
  cli::the_dev_layout_holds_the_store_the_softhsm_config_and_a_private_pin
  ops::a_store_from_the_previous_release_is_migrated_and_served
  ops::a_backup_taken_under_load_restores_tokens_rings_key_files_and_the_audit_log
  ops::a_restore_is_refused_under_a_running_server_and_keeps_later_revocations
  ops::a_store_with_a_newer_schema_is_refused_with_both_versions_named
  restore::
  custody::a_key_generated_but_never_recorded_is_reported_and_removed_only_through_the_destroy_gate
  outage::the_token_vanishing_for_five_seconds_under_load_gives_fast_503s_and_recovers_without_a_restart
  tls::tls_init_makes_a_hardware_signed_csr_and_install_cert_accepts_only_a_chain_for_that_key
  tpm_server::a_ring_on_the_tpm_signs_beside_jwt_default_on_the_hsm_and_survives_a_tpm_restart
)
for s in "${skips[@]}"; do printf -- '--skip %s ' "$s"; done
echo
