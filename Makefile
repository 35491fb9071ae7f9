# Mirrors .ci/run step by step.
.PHONY: ci fmt lint proto-lint deploy-lint test run

ci:
	bash .ci/run

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

proto-lint:
	./scripts/setup-tools.sh && .tools/bin/buf lint

deploy-lint:
	./scripts/validate-deploy.sh

test:
	./scripts/test.sh

run:
	cargo run --release -p identity-server
