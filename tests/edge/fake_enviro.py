"""A fake I2C bus with a Pimoroni Enviro board behind it: a BME280 and an LTR-559.

Only the hardware is faked: the REAL ``pimoroni-bme280`` and ``ltr559`` libraries (through
``i2cdevice``) read the chip ids, reset the chips, read the BME280's calibration registers,
trigger forced measurements, poll the status bits and run their own compensation maths on the
raw values this bus serves.

BME280 register map (Bosch BME280 datasheet, section 5.3): 0xD0 chip id (0x60), 0xE0 reset
(0xB6), 0x88..0xA1 and 0xE1..0xE7 calibration, 0xF2 ctrl_hum, 0xF3 status (bit 3 measuring),
0xF4 ctrl_meas (mode bits 1:0; 01/10 = forced), 0xF5 config, 0xF7..0xFE data (pressure and
temperature 20 bit, humidity 16 bit). A forced write runs one measurement: the next status read
says "measuring", the one after does not, and the chip is back in sleep mode.

Calibration: the coefficients pimoroni/bme280-python's own compensation tests use
(tests/calibration.py), written here into the calibration registers the way the chip lays them
out, so the library's register decoding runs too. With them the library maps temperature ADC
529191 → 24.7895 °C, pressure ADC 326816 → 1006.6152 hPa and humidity ADC 30281 → 68.6700 %RH
(that test suite's expected values), the defaults here.

LTR-559 register map (LITE-ON LTR-559ALS-01 datasheet): 0x80 ALS_CONTR (bit 1 SW reset, clears
itself), 0x86 PART_ID (0x92: part 9, revision 2), 0x87 MANUFAC_ID (0x05), 0x88..0x8B ALS data
(CH1 low/high, CH0 low/high), 0x8C ALS_PS_STATUS (bit 2 new ALS data, bit 0 new PS data),
0x8D/0x8E PS data. Once the chip is active a new ALS sample is ready at every status read
(reads here are far apart compared with its 50 ms repeat rate).
"""

from __future__ import annotations

import errno

BME280_CHIP_ID = 0x60
LTR559_ADDRESS = 0x23

# Calibration coefficients of pimoroni/bme280-python's compensation tests.
_T = (28009, 25654, 50)
_P = (39145, -10750, 3024, 5667, -120, -7, 15500, -14600, 6000)
_H1, _H2, _H3, _H4, _H5, _H6 = 75, 376, 0, 286, 50, 30

DEFAULT_TEMPERATURE_ADC = 529191
DEFAULT_PRESSURE_ADC = 326816
DEFAULT_HUMIDITY_ADC = 30281
DEFAULT_TEMPERATURE = 24.7894877676
DEFAULT_PRESSURE = 1006.61517564
DEFAULT_HUMIDITY = 68.66996648709039
#: CH0 1000, CH1 500: ratio 33 → the library's first coefficient pair, gain 4, 50 ms:
#: (1000·17743 + 500·11059) / 0.5 / 4 / 10000 = 1163.625 lx.
DEFAULT_CH0, DEFAULT_CH1 = 1000, 500
DEFAULT_LUX = 1163.625


def _le16(value: int) -> list[int]:
    return [value & 0xFF, (value >> 8) & 0xFF]


def _bme280_registers() -> list[int]:
    regs = [0] * 256
    regs[0xD0] = BME280_CHIP_ID
    cal: list[int] = []
    for value in (*_T, *_P):
        cal += _le16(value)
    regs[0x88 : 0x88 + len(cal)] = cal  # 0x88..0x9F
    regs[0xA1] = _H1
    regs[0xE1:0xE3] = _le16(_H2)
    regs[0xE3] = _H3
    regs[0xE4] = (_H4 >> 4) & 0xFF
    regs[0xE5] = (_H4 & 0x0F) | ((_H5 & 0x0F) << 4)
    regs[0xE6] = (_H5 >> 4) & 0xFF
    regs[0xE7] = _H6 & 0xFF
    return regs


def _ltr559_registers() -> list[int]:
    regs = [0] * 256
    regs[0x86] = 0x92
    regs[0x87] = 0x05
    return regs


class FakeEnviroBus:
    """An smbus-like bus with a BME280 (at ``bme280_addresses``) and an LTR-559 (at 0x23).

    Knobs (plain attributes and methods, set them between calls):
        bme280_addresses: where a BME280 answers; light: whether the LTR-559 answers.
        other_chips: address → chip id of other chips answering at 0xD0 (e.g. a BME680, 0x61).
        temperature_adc / pressure_adc / humidity_adc / ch0 / ch1: raw values served.
        fail_next(k, after=n, address=a): after n more good operations (on address a, or any),
            the next k raise OSError(EIO).
        unplugged: every operation raises OSError(EREMOTEIO), as with a loose cable.
        light_unplugged: only the LTR-559 stops answering.
        light_data_after: status reads before the LTR-559 has its first sample.

    Observations: ``measurements`` (BME280 forced measurements run), ``addresses_seen``.
    """

    def __init__(
        self,
        *,
        bme280_addresses: tuple[int, ...] = (0x76,),
        light: bool = True,
        other_chips: dict[int, int] | None = None,
    ) -> None:
        self.temperature_adc = DEFAULT_TEMPERATURE_ADC
        self.pressure_adc = DEFAULT_PRESSURE_ADC
        self.humidity_adc = DEFAULT_HUMIDITY_ADC
        self.ch0, self.ch1 = DEFAULT_CH0, DEFAULT_CH1
        self.unplugged = False
        self.light_unplugged = False
        self.light_data_after = 0
        self.measurements = 0
        self.addresses_seen: list[int] = []
        self._fail_ops = 0
        self._fail_after = 0
        self._fail_address: int | None = None
        self._measuring = False
        self._regs: dict[int, list[int]] = {a: _bme280_registers() for a in bme280_addresses}
        for address, chip_id in (other_chips or {}).items():
            regs = [0] * 256
            regs[0xD0] = chip_id
            self._regs[address] = regs
        if light:
            self._regs[LTR559_ADDRESS] = _ltr559_registers()

    def fail_next(self, count: int, *, after: int = 0, address: int | None = None) -> None:
        """Make ``count`` operations (on ``address``, or any) raise OSError(EIO) after ``after``."""
        self._fail_ops, self._fail_after, self._fail_address = count, after, address

    # -- the smbus-like interface i2cdevice and bme680 call -----------------------------------

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """Read one register."""
        return self.read_i2c_block_data(i2c_addr, register, 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write one register."""
        self.write_i2c_block_data(i2c_addr, register, [value])

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read ``length`` consecutive registers (smbus caps blocks at 32 bytes)."""
        regs = self._chip(i2c_addr)
        if not 1 <= length <= 32:
            raise ValueError(f"block length must be 1..32, got {length}")
        if i2c_addr == LTR559_ADDRESS:
            self._ltr559_read(regs, register)
        elif register == 0xF3:
            regs[0xF3] = 0x08 if self._measuring else 0x00
            self._measuring = False  # the next status read finds the measurement done
        return regs[register : register + length]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write consecutive registers, with the chips' side effects."""
        regs = self._chip(i2c_addr)
        for offset, value in enumerate(data):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"byte out of range: {value}")
            reg = register + offset
            if i2c_addr == LTR559_ADDRESS:
                regs[reg] = value & ~0x02 if reg == 0x80 else value  # SW reset clears itself
            elif reg == 0xE0:
                if value == 0xB6:
                    regs[:] = _bme280_registers()
            else:
                regs[reg] = value
                if reg == 0xF4 and value & 0x03 in (0x01, 0x02):
                    self._measure(regs)
                    regs[0xF4] = value & ~0x03  # back to sleep after one cycle

    def close(self) -> None:
        """Nothing to release."""

    # -- the chips ------------------------------------------------------------------------------

    def _chip(self, address: int) -> list[int]:
        if address not in self.addresses_seen:
            self.addresses_seen.append(address)
        if self.unplugged or (address == LTR559_ADDRESS and self.light_unplugged):
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        if self._fail_ops > 0 and self._fail_address in (None, address):
            if self._fail_after > 0:
                self._fail_after -= 1
            else:
                self._fail_ops -= 1
                raise OSError(errno.EIO, "Input/output error")
        if address not in self._regs:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")  # nothing acknowledged
        return self._regs[address]

    def _measure(self, regs: list[int]) -> None:
        self.measurements += 1
        self._measuring = True
        for base, adc in ((0xF7, self.pressure_adc), (0xFA, self.temperature_adc)):
            regs[base] = (adc >> 12) & 0xFF
            regs[base + 1] = (adc >> 4) & 0xFF
            regs[base + 2] = (adc & 0x0F) << 4
        regs[0xFD] = (self.humidity_adc >> 8) & 0xFF
        regs[0xFE] = self.humidity_adc & 0xFF

    def _ltr559_read(self, regs: list[int], register: int) -> None:
        if register != 0x8C:
            return
        if self.light_data_after > 0:
            self.light_data_after -= 1
            regs[0x8C] = 0x00
            return
        regs[0x88:0x8C] = [*_le16(self.ch1), *_le16(self.ch0)]
        regs[0x8C] = 0x04  # new ALS data
