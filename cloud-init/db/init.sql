-- Written by halab: the lab's database and users. Idempotent; in ha it runs on the bootstrap node
-- only (Galera replicates users and grants).
CREATE DATABASE IF NOT EXISTS `{{db_name}}` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '{{db_app_user}}'@'%' IDENTIFIED BY '{{db_app_password}}';
ALTER USER '{{db_app_user}}'@'%' IDENTIFIED BY '{{db_app_password}}';
GRANT ALL PRIVILEGES ON `{{db_name}}`.* TO '{{db_app_user}}'@'%';
CREATE USER IF NOT EXISTS '{{db_check_user}}'@'localhost' IDENTIFIED BY '{{db_check_password}}';
ALTER USER '{{db_check_user}}'@'localhost' IDENTIFIED BY '{{db_check_password}}';
CREATE USER IF NOT EXISTS 'sst'@'localhost' IDENTIFIED BY '{{galera_sst_password}}';
ALTER USER 'sst'@'localhost' IDENTIFIED BY '{{galera_sst_password}}';
GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'sst'@'localhost';
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('{{db_root_password}}');
FLUSH PRIVILEGES;
