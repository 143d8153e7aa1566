/*
 * enviromon for the Raspberry Pi web simulator (https://azure-samples.github.io/raspberry-pi-web-simulator/).
 *
 * Paste this whole file into the simulator's code pane, put your device's connection string
 * below, and press Run. It sends enviromon telemetry schema 1 (contract/telemetry-v1.schema.json)
 * every 2 seconds from the simulator's BME280, and blinks the LED on each message sent.
 *
 * Units: temperature °C (the sensor's temperature_C), humidity %RH. Pressure is left out
 * (sent as null): the simulator's pressure_hPa reads about 10-12, which is no station pressure
 * (that is 300-1100 hPa), and there is no sound way to correct it. gasResistance and iaq are
 * null too (a BME280 has no gas sensor). source is "simulated": this is not a real sensor.
 *
 * Direct methods: "stop" pauses sending, "start" resumes it.
 */
'use strict';

const wpi = require('wiring-pi');
const Client = require('azure-iot-device').Client;
const Message = require('azure-iot-device').Message;
const Protocol = require('azure-iot-device-mqtt').Mqtt;
const BME280 = require('bme280-sensor');

const connectionString = '[Your IoT hub device connection string]';

const INTERVAL_MS = 2000;
const LED_PIN = 4;
const TEMPERATURE_HIGH = 30;
// Only for a hub with its own CA (a local test hub): set globalThis.enviromonClientOptions to
// {ca: '<PEM>'} before this script runs. Empty on Azure IoT Hub.
const clientOptions = globalThis.enviromonClientOptions || {};

// A new boot id each time the script starts; seq counts the readings within it.
function newBoot() {
  let hex = '';
  for (let i = 0; i < 16; i++) {
    hex += Math.floor(Math.random() * 16).toString(16);
  }
  return hex;
}

const boot = newBoot();
const deviceIdMatch = /(?:^|;)DeviceId=([^;]+)/.exec(connectionString);
const label = deviceIdMatch ? deviceIdMatch[1] : 'Raspberry Pi Web Client';
let seq = 0;
let sending = false;
let client = null;
let sensor = null;
let ledTimer = null;

function round(value, decimals) {
  const f = Math.pow(10, decimals);
  return Math.round(value * f) / f;
}

function inRange(value, low, high) {
  return typeof value === 'number' && isFinite(value) && value >= low && value <= high;
}

// One schema-1 reading from the sensor's data.
function reading(data) {
  seq += 1;
  const flags = [];
  let temperature = null;
  let humidity = null;
  if (inRange(data.temperature_C, -40, 85)) {
    temperature = round(data.temperature_C, 2);
  } else {
    flags.push('temperature_out_of_range');
  }
  if (inRange(data.humidity, 0, 100)) {
    humidity = round(data.humidity, 2);
  } else {
    flags.push('humidity_out_of_range');
  }
  return {
    schema: 1,
    deviceId: label,
    boot: boot,
    seq: seq,
    ts: new Date().toISOString(),
    source: 'simulated',
    temperature: temperature,
    humidity: humidity,
    pressure: null,
    gasResistance: null,
    iaq: null,
    calibration: 0,
    flags: flags
  };
}

function blinkLED() {
  if (ledTimer) {
    clearTimeout(ledTimer);
  }
  wpi.digitalWrite(LED_PIN, 1);
  ledTimer = setTimeout(function () {
    wpi.digitalWrite(LED_PIN, 0);
  }, 500);
}

function sendReading() {
  if (!sending) {
    return;
  }
  sensor.readSensorData()
    .then(function (data) {
      const body = reading(data);
      const message = new Message(JSON.stringify(body));
      message.messageId = body.boot + ':' + body.seq;
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      const alert = body.temperature !== null && body.temperature >= TEMPERATURE_HIGH;
      message.properties.add('temperatureAlert', alert ? 'true' : 'false');
      message.properties.add('source', 'simulated');
      console.log('Sending message: ' + JSON.stringify(body));
      client.sendEvent(message, function (err) {
        if (err) {
          console.error('Failed to send message to Azure IoT Hub: ' + err.message);
        } else {
          blinkLED();
          console.log('Message sent to Azure IoT Hub');
        }
      });
    })
    .catch(function (err) {
      console.error('Failed to read the sensor: ' + (err.message || err));
    });
}

function onStart(request, response) {
  sending = true;
  response.send(200, 'Sending started', function () {});
}

function onStop(request, response) {
  sending = false;
  response.send(200, 'Sending stopped', function () {});
}

wpi.setup('wpi');
wpi.pinMode(LED_PIN, wpi.OUTPUT);
sensor = new BME280({ i2cBusNo: 1, i2cAddress: BME280.BME280_DEFAULT_I2C_ADDRESS() });
sensor.init()
  .then(function () {
    sending = true;
  })
  .catch(function (err) {
    console.error(err.message || err);
  });

client = Client.fromConnectionString(connectionString, Protocol);
client.setOptions(clientOptions, function (optionsErr) {
  if (optionsErr) {
    console.error('[IoT hub Client] Options error: ' + optionsErr.message);
    return;
  }
  client.open(function (err) {
    if (err) {
      console.error('[IoT hub Client] Connect error: ' + err.message);
      return;
    }
    client.onDeviceMethod('start', onStart);
    client.onDeviceMethod('stop', onStop);
    setInterval(sendReading, INTERVAL_MS);
  });
});
