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

APT_PACKAGES := libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils passt socat iproute2 \
	libsqlite3-dev libxss-dev libx11-dev busybox-static kmod cpio xorriso curl procps wrk python3 python3-pip chromium \
	xvfb xdotool x11-utils novnc libjs-xterm node-xterm \
	libsystemd-dev libwayland-dev wayland-protocols plasma-wayland-protocols sway mutter dbus-daemon python3-dbus
# The Wayland idle protocols' C glue (Sources/CWaylandIdle/generated) is wayland-scanner's output for these.
WAYLAND_IDLE := Sources/CWaylandIdle
PYTHON ?= python3
# The contract tests' Python packages (openapi-spec-validator, schemathesis, pytest).
CONTRACT_REQUIREMENTS := Tests/Contract/requirements.txt
BROWSER_TESTS := Tests/Browser

.PHONY: wayland-protocols all deps appliance build build-tests run test test-unit test-e2e test-contract test-browser bench bench-quick chaos chaos-quick install install-user clean help

all: build

help:
	@echo "make run    install what is missing, build, and start vmsessiond on $(LISTEN)"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make bench  what the daemon costs over libvirt, and the idle controller on Xvfb + a real guest (QUICK=1: few runs)"
	@echo "make install       system mode: root, /usr/local and /etc, the system unit"
	@echo "make install-user  user mode: no root, ~/.local and the systemd user unit bound to the graphical session"
	@echo "make chaos  kill -9 the daemon and its qemu at random points, check what survives (CHAOS_ROUNDS=50)"
	@echo "make deps | appliance | build | test-unit | test-e2e | test-contract | test-browser | bench | chaos-quick | wayland-protocols | clean"

# Debian packages, the system user the embedded QEMU driver insists on, and the browser tests' PyPI packages.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@getent passwd libvirt-qemu >/dev/null || $(SUDO) useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
	@$(PYTHON) -c 'import pytest, openapi_spec_validator, schemathesis' 2>/dev/null || \
		$(PYTHON) -m pip install -q -r $(CONTRACT_REQUIREMENTS) || \
		$(PYTHON) -m pip install -q --break-system-packages -r $(CONTRACT_REQUIREMENTS)
	@$(PYTHON) -c 'import pytest, websocket' 2>/dev/null || $(PYTHON) -m pip install -q -r $(BROWSER_TESTS)/requirements.txt || \
		$(PYTHON) -m pip install -q --break-system-packages -r $(BROWSER_TESTS)/requirements.txt

# Regenerates the committed Wayland protocol glue from Debian's XML (committed so that a build needs no scanner).
wayland-protocols: deps
	cp /usr/share/plasma-wayland-protocols/idle.xml $(WAYLAND_IDLE)/protocols/kde-idle.xml
	cp /usr/share/wayland-protocols/staging/ext-idle-notify/ext-idle-notify-v1.xml $(WAYLAND_IDLE)/protocols/
	for p in kde-idle ext-idle-notify-v1; do \
		wayland-scanner client-header $(WAYLAND_IDLE)/protocols/$$p.xml $(WAYLAND_IDLE)/generated/$$p-client-protocol.h && \
		wayland-scanner private-code $(WAYLAND_IDLE)/protocols/$$p.xml $(WAYLAND_IDLE)/generated/$$p-protocol.c || exit 1; \
	done

appliance: deps
	@bash Contextualization/appliance/build.sh $(APPLIANCE_DIR)

# One build configuration for everything (`--build-tests`): `make run` after `make test`, or the other way
# round, compiles nothing again (a plain `swift build` and a test build differ in flags and would rebuild
# each other's modules).
build: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

run: appliance build
	@mkdir -p $(STATE_DIR)
	exec "$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path)/vmsessiond" --listen $(LISTEN) \
		--state-dir $(STATE_DIR) --appliance-dir $(APPLIANCE_DIR) --accelerator $(ACCELERATOR)

# Unit and route tests (test:///default, in-memory SQLite) and the end-to-end tests that start the
# real daemon: on the test driver, and booting the appliance under TCG. `--build-tests` builds the daemon
# and the tests in one configuration, so nothing is compiled twice.
TEST_ENV = BIN=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
	export VMSESSIOND_BINARY=$$BIN/vmsessiond VMSESSIONCTL_BINARY=$$BIN/vmsessionctl VMSESSIOND_TEST_APPLIANCE=$(APPLIANCE_DIR);

build-tests: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

# The browser tests: a headless Chromium loads vmsession.js from the real daemon into a page of another
# origin, and the daemon's own page; screenshots go to artifacts/browser/.
PYTEST = PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m pytest -p no:cacheprovider -s -q $(BROWSER_TESTS)

test: appliance build-tests
	bash Contextualization/appliance/test-boot.sh $(APPLIANCE_DIR)
	$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build
	$(TEST_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider Tests/Contract
	$(TEST_ENV) $(PYTEST)
	$(MAKE) --no-print-directory chaos-quick
	$(MAKE) --no-print-directory bench-quick

test-browser: build-tests
	$(TEST_ENV) $(PYTEST)

test-unit: build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build --skip EndToEndTests

test-e2e: appliance build-tests
	$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build --filter EndToEndTests

# Not tests: what the daemon costs over libvirt itself, side by side in one run
# (Benchmarks/daemon_overhead.py), and the idle-aware controller on real parts: Xvfb, xdotool and a busy
# TCG guest (Benchmarks/idle_bench.py: input -> cap latency on X11 and on Wayland (sway), the daemon's CPU while idle, cap accuracy).
# `make bench` measures a release build; QUICK=1 (and `make test`, through bench-quick) runs a few of each
# with the debug build so that the benchmark code never rots, without judging its numbers.
BENCH_OUT ?= $(CURDIR)/artifacts/bench.json
bench: appliance
ifeq ($(QUICK),1)
	$(MAKE) --no-print-directory bench-quick
else
	$(SWIFT) build -c release
	bin=$$($(SWIFT) build -c release --show-bin-path); \
		python3 Benchmarks/daemon_overhead.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer \
			--appliance $(APPLIANCE_DIR) --out $(BENCH_OUT) && \
		python3 Benchmarks/idle_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) && \
		python3 Benchmarks/cap_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/cap_bench.json && \
		python3 Benchmarks/console_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/console_bench.json
endif

bench-quick: appliance build-tests
	bin=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
		python3 Benchmarks/daemon_overhead.py --quick --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer \
			--appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/bench-quick.json && \
		QUICK=1 python3 Benchmarks/idle_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) && \
		QUICK=1 python3 Benchmarks/cap_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/cap_bench-quick.json && \
		QUICK=1 python3 Benchmarks/console_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/console_bench-quick.json

# Chaos: the real daemon on the embedded driver with real appliance guests, killed with SIGKILL at random
# points of open, start, pause, hibernate, restore, stop and close, and with its qemu killed; after every
# restart it checks events, state against the VMs, orphans, the database and the next action, and prints
# the counts (Tests/Chaos/chaos.py). CHAOS_ROUNDS sets the rounds (50 by default; chaos-quick runs 5,
# for `make test`); CHAOS_SEED replays a run.
CHAOS_ROUNDS ?= 50
chaos: appliance build-tests
	bin=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
		CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(PYTHON) Tests/Chaos/chaos.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR)

chaos-quick: appliance build-tests
	$(MAKE) --no-print-directory chaos CHAOS_ROUNDS=5

# The HTTP contract (Schema/openapi.yaml): validated, served, and checked by schemathesis against the real
# daemon on the test driver (no VM boots).
test-contract: build-tests
	$(TEST_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider Tests/Contract

# A release build installed for systemd: the binary with its resource bundle in $(PREFIX)/lib/vmsessiond,
# the unit, a config file with every default (kept if present), and the appliance in the state directory.
PREFIX ?= /usr/local
install: appliance
	$(SWIFT) build -c release
	install -d $(DESTDIR)$(PREFIX)/lib/vmsessiond $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/vmsessiond \
		$(DESTDIR)/etc/systemd/system $(DESTDIR)/var/lib/vmsessiond/appliance
	bin=$$($(SWIFT) build -c release --show-bin-path); \
		install -m 0755 $$bin/vmsessiond $$bin/vmsessionctl $(DESTDIR)$(PREFIX)/lib/vmsessiond/; \
		cp -R $$bin/vmsessiond_*.resources $(DESTDIR)$(PREFIX)/lib/vmsessiond/
	ln -sf ../lib/vmsessiond/vmsessiond $(DESTDIR)$(PREFIX)/bin/vmsessiond
	ln -sf ../lib/vmsessiond/vmsessionctl $(DESTDIR)$(PREFIX)/bin/vmsessionctl
	install -m 0644 systemd/vmsessiond.service $(DESTDIR)/etc/systemd/system/vmsessiond.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/vmsessiond/README.md
	[ -f $(DESTDIR)/etc/vmsessiond/config.json ] || install -m 0644 systemd/config.json $(DESTDIR)/etc/vmsessiond/config.json
	install -m 0644 $(APPLIANCE_DIR)/vmlinuz $(APPLIANCE_DIR)/initrd.img $(APPLIANCE_DIR)/cmdline $(DESTDIR)/var/lib/vmsessiond/appliance/
	@echo "Installed. Start it with: systemctl daemon-reload && systemctl enable --now vmsessiond"

# User mode, no root: the same build for the desktop user, under ~/.local, with the systemd *user* unit
# (bound to the graphical session) and the appliance in the user's XDG state directory.
USER_PREFIX ?= $(HOME)/.local
USER_UNIT_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user
USER_STATE_DIR ?= $(or $(XDG_STATE_HOME),$(HOME)/.local/state)/vmsessiond
install-user: appliance
	$(SWIFT) build -c release
	install -d $(USER_PREFIX)/lib/vmsessiond $(USER_PREFIX)/bin $(USER_UNIT_DIR) $(USER_STATE_DIR)/appliance
	bin=$$($(SWIFT) build -c release --show-bin-path); \
		install -m 0755 $$bin/vmsessiond $$bin/vmsessionctl $(USER_PREFIX)/lib/vmsessiond/; \
		cp -R $$bin/vmsessiond_*.resources $(USER_PREFIX)/lib/vmsessiond/
	ln -sf ../lib/vmsessiond/vmsessiond $(USER_PREFIX)/bin/vmsessiond
	ln -sf ../lib/vmsessiond/vmsessionctl $(USER_PREFIX)/bin/vmsessionctl
	sed 's|%h/.local/lib/vmsessiond/vmsessiond|$(USER_PREFIX)/lib/vmsessiond/vmsessiond|' systemd/user/vmsessiond.service \
		> $(USER_UNIT_DIR)/vmsessiond.service
	install -D -m 0644 README.md $(USER_PREFIX)/share/doc/vmsessiond/README.md
	chmod 0700 $(USER_STATE_DIR)
	install -m 0644 $(APPLIANCE_DIR)/vmlinuz $(APPLIANCE_DIR)/initrd.img $(APPLIANCE_DIR)/cmdline $(USER_STATE_DIR)/appliance/
	@echo "Installed for $$USER. Start it with: systemctl --user daemon-reload && systemctl --user enable --now vmsessiond"

clean:
	rm -rf .build $(CACHE)
