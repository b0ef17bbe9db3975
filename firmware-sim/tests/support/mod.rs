pub mod mosquitto;
