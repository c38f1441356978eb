#ifndef VMSESSIOND_CLIBVIRT_SHIM_H
#define VMSESSIOND_CLIBVIRT_SHIM_H
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libvirt/libvirt-qemu.h>
#endif
