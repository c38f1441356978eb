# vmsessiond: the two commands a newcomer needs are `make run` and `make test`.
# Everything they need is installed by `make deps` (Debian packages, the libvirt-qemu user).

SHELL := /bin/bash
SWIFT ?= swift
CACHE ?= $(CURDIR)/.cache
APPLIANCE_DIR ?= $(CACHE)/appliance
STATE_DIR ?= $(CACHE)/state
LISTEN ?= 127.0.0.1:7011
# Guests hang under KVM on the development machines; `auto` picks KVM wherever /dev/kvm is usable.
ACCELERATOR ?= tcg
BUILD_FLAGS ?=
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

APT_PACKAGES := libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils \
	libsqlite3-dev libxss-dev libx11-dev busybox-static kmod cpio xorriso curl procps

.PHONY: all deps appliance build run test test-unit test-e2e bench clean help

all: build

help:
	@echo "make run    install what is missing, build, and start vmsessiond on $(LISTEN)"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make deps | appliance | build | test-unit | test-e2e | clean"

# Debian packages and the system user the embedded QEMU driver insists on.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@getent passwd libvirt-qemu >/dev/null || $(SUDO) useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu

appliance: deps
	@bash Contextualization/appliance/build.sh $(APPLIANCE_DIR)

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

run: appliance build
	@mkdir -p $(STATE_DIR)
	$(SWIFT) run $(BUILD_FLAGS) vmsessiond --listen $(LISTEN) --state-dir $(STATE_DIR) \
		--appliance-dir $(APPLIANCE_DIR) --accelerator $(ACCELERATOR)

# Unit and route tests (test:///default, in-memory SQLite) and the end-to-end tests that start the
# real daemon: one against the test driver, one booting the appliance under TCG.
test: appliance build
	bash Contextualization/appliance/test-boot.sh $(APPLIANCE_DIR)
	VMSESSIOND_BINARY=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/vmsessiond \
	VMSESSIOND_TEST_APPLIANCE=$(APPLIANCE_DIR) \
		$(SWIFT) test $(BUILD_FLAGS)

test-unit: build
	$(SWIFT) test $(BUILD_FLAGS) --skip EndToEndTests

test-e2e: appliance build
	VMSESSIOND_BINARY=$$($(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/vmsessiond \
	VMSESSIOND_TEST_APPLIANCE=$(APPLIANCE_DIR) \
		$(SWIFT) test $(BUILD_FLAGS) --filter EndToEndTests

clean:
	rm -rf .build $(CACHE)
