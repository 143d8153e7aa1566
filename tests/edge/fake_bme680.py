"""A fake I2C bus with a BME680 behind it, for the REAL bme680 library to talk to.

Only the hardware is faked: the library's own code probes the chip id, reads the calibration
registers, writes oversampling/filter/heater settings, triggers forced measurements and runs its
compensation maths on the raw ADC values this bus serves.

Register map emulated (BME680 datasheet, section 5.2; the ones bme680 2.0.0 touches):
- 0xD0 chip id (0x61), 0xF0 variant (0x00 BME680, 0x01 BME688), 0xE0 soft reset (0xB6).
- 0x89..0xA1 and 0xE1..0xF0 calibration; 0x00/0x02/0x04 heater value/range and switching error.
- 0x70..0x75 control (heater off, run_gas/nb_conv, osrs_h, osrs_t/osrs_p/mode, filter).
- 0x5A.. heater resistance, 0x64.. gas wait, per profile.
- 0x1D..0x2D field 0: status (new_data 0x80), pressure/temperature (20 bit), humidity (16 bit),
  gas ADC (10 bit) with gas_valid 0x20 / heat_stab 0x10 / gas range in 0x2B (and 0x2D for the
  BME688 variant).
Writing mode "forced" (1) to 0x74 runs one measurement into field 0 and returns to sleep.

Calibration: the coefficients of a real chip, as dumped in pimoroni/bme680-python issue #11 and
used by that library's compensation tests, where they map temperature ADC 501240 → 26.69 °C,
pressure ADC 353485 → 987.12 hPa and humidity ADC 19019 → 42.402 %RH. Those are the defaults
here, so a test can tell a correct register layout from a wrong one by the values alone.
"""

from __future__ import annotations

import errno
import threading
import time

CHIP_ID = 0x61
CHIP_ID_REG = 0xD0
VARIANT_REG = 0xF0
SOFT_RESET_REG = 0xE0
SOFT_RESET_CMD = 0xB6
CTRL_MEAS_REG = 0x74
FIELD0_REG = 0x1D
COEFF1_REG = 0x89
COEFF2_REG = 0xE1
RES_HEAT_VAL_REG = 0x00
RES_HEAT_RANGE_REG = 0x02
RANGE_SW_ERR_REG = 0x04

#: Expected results of the default ADC values with this calibration (see module docstring).
DEFAULT_TEMPERATURE = 26.69
DEFAULT_PRESSURE = 987.12
DEFAULT_HUMIDITY = 42.402
#: gas ADC 512 in range 6 on the low (BME680) variant: (var3 + var2/2) / var2 = 125000 Ω.
DEFAULT_GAS_RESISTANCE = 125000.0

# Calibration coefficients of a real BME680 (pimoroni/bme680-python issue #11).
_T1, _T2, _T3 = 26041, 26469, 3
_P1, _P2, _P3, _P4, _P5 = 36673, -10515, 88, 7310, -129
_P6, _P7, _P8, _P9, _P10 = 30, 46, -3177, -2379, 30
_H1, _H2, _H3, _H4, _H5, _H6, _H7 = 676, 1029, 0, 45, 20, 120, -100
_GH1, _GH2, _GH3 = -30, -24754, 18
_RES_HEAT_RANGE, _RES_HEAT_VAL, _RANGE_SW_ERR = 1, 48, 0


def _u8(value: int) -> int:
    return value & 0xFF


def _calibration_block() -> list[int]:
    """The 41 calibration bytes (0x89.. then 0xE1..), laid out as the datasheet places them."""
    cal = [0] * 41

    def word(lsb_index: int, value: int) -> None:
        cal[lsb_index] = _u8(value)
        cal[lsb_index + 1] = _u8(value >> 8)

    word(1, _T2)
    cal[3] = _u8(_T3)
    word(5, _P1)
    word(7, _P2)
    cal[9] = _u8(_P3)
    word(11, _P4)
    word(13, _P5)
    cal[15] = _u8(_P7)
    cal[16] = _u8(_P6)
    word(19, _P8)
    word(21, _P9)
    cal[23] = _u8(_P10)
    # H1 and H2 are 12 bit and share byte 26: H2's low nibble on top, H1's low nibble below.
    cal[25] = _u8(_H2 >> 4)
    cal[26] = ((_H2 & 0x0F) << 4) | (_H1 & 0x0F)
    cal[27] = _u8(_H1 >> 4)
    cal[28] = _u8(_H3)
    cal[29] = _u8(_H4)
    cal[30] = _u8(_H5)
    cal[31] = _u8(_H6)
    cal[32] = _u8(_H7)
    word(33, _T1)
    word(35, _GH2)
    cal[37] = _u8(_GH1)
    cal[38] = _u8(_GH3)
    return cal


class FakeBme680Bus:
    """An smbus-like bus (smbus2.SMBus's four register calls) with BME680s at some addresses.

    Knobs (plain attributes and methods, set them between calls):
        addresses: which addresses a BME680 answers on; others NACK (OSError 121, as smbus2).
        not_ready_reads: the next N forced measurements leave new_data clear.
        heat_stable: whether measurements set heat_stab and gas_valid.
        temperature_adc / pressure_adc / humidity_adc / gas_adc / gas_range: raw values served.
        fail_next(k, after=n): after n more good operations, the next k raise OSError(EIO).
        unplugged: every operation raises OSError(EREMOTEIO), as with a loose cable.
        short_blocks: block reads return one byte less than asked (a garbled transfer).

    Observations: `registers(addr)`, `measurements` (forced measurements run), `operations`,
    `addresses_seen` (addresses talked to, in the order first seen), `max_concurrent` (most
    operations ever in progress at once: 1 unless callers race on the bus).
    """

    def __init__(
        self,
        *,
        addresses: tuple[int, ...] = (0x76,),
        other_chips: dict[int, int] | None = None,
        variant: int = 0x00,
    ) -> None:
        self.addresses = set(addresses)
        # Non-BME680 chips that answer (address -> chip id), e.g. a BMP280 (0x58) at 0x76.
        self.other_chips = dict(other_chips or {})
        self.variant = variant
        self.not_ready_reads = 0
        self.heat_stable = True
        self.temperature_adc = 501240
        self.pressure_adc = 353485
        self.humidity_adc = 19019
        self.gas_adc = 512
        self.gas_range = 6
        self.unplugged = False
        self.short_blocks = False
        self.measurements = 0
        self.operations = 0
        self.addresses_seen: list[int] = []
        self.max_concurrent = 0
        self.operation_delay = 0.0  # seconds each operation takes (to expose races)
        self._in_progress = 0
        self._count_lock = threading.Lock()
        self._fail_ops = 0
        self._fail_after = 0
        self._regs: dict[int, list[int]] = {}
        for address in self.addresses:
            self._regs[address] = self._power_on(CHIP_ID)
        for address, chip_id in self.other_chips.items():
            self._regs[address] = self._power_on(chip_id)

    # -- knobs ----------------------------------------------------------------------------------

    def fail_next(self, count: int, *, after: int = 0) -> None:
        """Make `count` bus operations raise OSError(EIO), once `after` more have succeeded."""
        self._fail_ops = count
        self._fail_after = after

    def registers(self, address: int) -> list[int]:
        """A copy of the register file of the chip at `address`."""
        return list(self._regs[address])

    # -- the smbus-like interface the bme680 library calls ----------------------------------------

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """Read one register."""
        regs = self._chip(i2c_addr)
        return regs[register]

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write one register, with the side effects the chip has."""
        regs = self._chip(i2c_addr)
        if not 0 <= value <= 0xFF:
            raise ValueError(f"byte out of range: {value}")
        self._write(i2c_addr, regs, register, value)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read `length` consecutive registers (smbus caps blocks at 32 bytes)."""
        regs = self._chip(i2c_addr)
        if not 1 <= length <= 32:
            raise ValueError(f"block length must be 1..32, got {length}")
        end = register + length - (1 if self.short_blocks else 0)
        return regs[register:end]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write consecutive registers."""
        regs = self._chip(i2c_addr)
        for offset, value in enumerate(data):
            self._write(i2c_addr, regs, register + offset, value)

    def close(self) -> None:
        """Nothing to release."""

    # -- the chip -------------------------------------------------------------------------------

    def _chip(self, address: int) -> list[int]:
        with self._count_lock:
            self._in_progress += 1
            self.max_concurrent = max(self.max_concurrent, self._in_progress)
        try:
            if self.operation_delay:
                time.sleep(self.operation_delay)
        finally:
            with self._count_lock:
                self._in_progress -= 1
        self.operations += 1
        if address not in self.addresses_seen:
            self.addresses_seen.append(address)
        if self.unplugged:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        if self._fail_ops > 0 and self._fail_after > 0:
            self._fail_after -= 1
        elif self._fail_ops > 0:
            self._fail_ops -= 1
            raise OSError(errno.EIO, "Input/output error")
        if address not in self._regs:
            # What smbus2 raises when nothing acknowledges the address.
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return self._regs[address]

    def _power_on(self, chip_id: int) -> list[int]:
        regs = [0] * 256
        regs[CHIP_ID_REG] = chip_id
        regs[VARIANT_REG] = self.variant
        cal = _calibration_block()
        regs[COEFF1_REG : COEFF1_REG + 25] = cal[:25]
        regs[COEFF2_REG : COEFF2_REG + 16] = cal[25:]
        regs[RES_HEAT_VAL_REG] = _u8(_RES_HEAT_VAL)
        regs[RES_HEAT_RANGE_REG] = _RES_HEAT_RANGE << 4
        regs[RANGE_SW_ERR_REG] = _RANGE_SW_ERR << 4
        return regs

    def _write(self, address: int, regs: list[int], register: int, value: int) -> None:
        if register == SOFT_RESET_REG:
            if value == SOFT_RESET_CMD:
                chip_id = regs[CHIP_ID_REG]
                regs[:] = self._power_on(chip_id)
            return
        regs[register] = value
        if register == CTRL_MEAS_REG and value & 0x03 == 0x01:
            self._measure(regs)
            regs[CTRL_MEAS_REG] = value & ~0x03  # back to sleep, as the chip does after a cycle

    def _measure(self, regs: list[int]) -> None:
        self.measurements += 1
        if self.not_ready_reads > 0:
            self.not_ready_reads -= 1
            regs[FIELD0_REG] = 0x00
            return
        field = [0] * 17
        field[0] = 0x80  # new_data, gas index 0
        field[1] = self.measurements & 0xFF
        for offset, adc in ((2, self.pressure_adc), (5, self.temperature_adc)):
            field[offset] = (adc >> 12) & 0xFF
            field[offset + 1] = (adc >> 4) & 0xFF
            field[offset + 2] = (adc & 0x0F) << 4
        field[8] = (self.humidity_adc >> 8) & 0xFF
        field[9] = self.humidity_adc & 0xFF
        status = 0x30 if self.heat_stable else 0x00  # gas_valid | heat_stab
        gas_msb = (self.gas_adc >> 2) & 0xFF
        gas_lsb = ((self.gas_adc & 0x03) << 6) | status | (self.gas_range & 0x0F)
        field[13], field[14] = gas_msb, gas_lsb  # BME680 (low variant)
        field[15], field[16] = gas_msb, gas_lsb  # BME688 (high variant)
        regs[FIELD0_REG : FIELD0_REG + 17] = field
