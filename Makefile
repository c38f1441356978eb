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
	libsqlite3-dev libxss-dev libx11-dev busybox-static kmod cpio xorriso curl procps \
	xvfb xdotool x11-utils python3

.PHONY: all deps appliance build build-tests run test test-unit test-e2e bench install clean help

all: build

help:
	@echo "make run    install what is missing, build, and start vmsessiond on $(LISTEN)"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make bench  the idle controller on Xvfb + a real guest: input->cap latency, daemon CPU, cap accuracy (QUICK=1: few runs)"
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
# real daemon: on the test driver, and booting the appliance under TCG. `--build-tests` builds the daemon
# and the tests in one configuration, so nothing is compiled twice.
TEST_ENV = VMSESSIOND_BINARY=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path)/vmsessiond \
	VMSESSIOND_TEST_APPLIANCE=$(APPLIANCE_DIR)

build-tests: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

test: appliance build-tests
	bash Contextualization/appliance/test-boot.sh $(APPLIANCE_DIR)
	$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build

test-unit: build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build --skip EndToEndTests

test-e2e: appliance build-tests
	$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build --filter EndToEndTests

# Not a test: measures the idle-aware controller on real parts (Xvfb, xdotool, a busy TCG guest) and
# prints latency from input to the cap in libvirt, the daemon's CPU while idle, and the guest's CPU at
# each cap. QUICK=1 makes few runs.
bench: appliance build-tests
	QUICK=$(QUICK) python3 Benchmarks/idle_bench.py \
		--binary $$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path)/vmsessiond --appliance $(APPLIANCE_DIR)

# A release build installed for systemd: the binary with its resource bundle in $(PREFIX)/lib/vmsessiond,
# the unit, a config file with every default (kept if present), and the appliance in the state directory.
PREFIX ?= /usr/local
install: appliance
	$(SWIFT) build -c release
	install -d $(DESTDIR)$(PREFIX)/lib/vmsessiond $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/vmsessiond \
		$(DESTDIR)/etc/systemd/system $(DESTDIR)/var/lib/vmsessiond/appliance
	bin=$$($(SWIFT) build -c release --show-bin-path); \
		install -m 0755 $$bin/vmsessiond $(DESTDIR)$(PREFIX)/lib/vmsessiond/vmsessiond; \
		cp -R $$bin/vmsessiond_*.resources $(DESTDIR)$(PREFIX)/lib/vmsessiond/
	ln -sf ../lib/vmsessiond/vmsessiond $(DESTDIR)$(PREFIX)/bin/vmsessiond
	install -m 0644 systemd/vmsessiond.service $(DESTDIR)/etc/systemd/system/vmsessiond.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/vmsessiond/README.md
	[ -f $(DESTDIR)/etc/vmsessiond/config.json ] || install -m 0644 systemd/config.json $(DESTDIR)/etc/vmsessiond/config.json
	install -m 0644 $(APPLIANCE_DIR)/vmlinuz $(APPLIANCE_DIR)/initrd.img $(APPLIANCE_DIR)/cmdline $(DESTDIR)/var/lib/vmsessiond/appliance/
	@echo "Installed. Start it with: systemctl daemon-reload && systemctl enable --now vmsessiond"

clean:
	rm -rf .build $(CACHE)
